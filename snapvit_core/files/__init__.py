"""Safe files: atomic writes, bounded reads, refusing hostile pickles and oversized images."""
