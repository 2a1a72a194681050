"""Export: the pruned model's files, their verification, the model card and the transformers code it carries."""
