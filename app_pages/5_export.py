"""Page 5: export the pruned model at the explorer's configuration (optionally weight-corrected, ONNX)."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import streamlit as st

from snapvit_core.data import load_images, preprocess
from snapvit_core.engine.correction import CorrectionConfig
from snapvit_core.errors import SnapViTError
from snapvit_core.export.configuration import ExportRequest, export_configuration
from ui import config_state, page, session, state
from ui.labels import sparsity_text

EXPORTS_DIR = session.ROOT / "exports"

st.title("Export")
view = page.explorer_view_or_stop()
explorer, scores, scores_label = view.explorer, view.scores, view.scores_label
mlp_sparsity, head_sparsity = config_state.current().pair  # the explorer's sliders, kept across pages
plan = explorer.plan_for(mlp_sparsity, head_sparsity)
st.write(
    f"Configuration from the explorer: **MLP sparsity {sparsity_text(mlp_sparsity)}, "
    f"head sparsity {sparsity_text(head_sparsity)}** "
    f"(scores: {scores_label}) - kept heads per block {plan.kept_heads}, kept neurons per block {plan.kept_neurons}"
    f" (MLP widths aligned to {plan.align})."
)
st.caption("Change the configuration with the sliders on the Elastic explorer page.")

suffix = f"_m{sparsity_text(mlp_sparsity)}_h{sparsity_text(head_sparsity)}"
default_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{session.selection().model_id}{suffix}")
with st.form("export_form"):
    name = st.text_input("Export folder name (inside exports/)", value=default_name)
    correct = st.checkbox("Weight correction (SparseGPT-style, uses calibration images from the selected data)")
    left, right = st.columns(2)
    samples = left.number_input("Calibration images", min_value=8, max_value=10_000, value=256)
    damping = right.selectbox("Damping", ["mean", "max", "percentile"], help="max suits backbones with outliers")
    onnx = st.checkbox("Also export ONNX (checked numerically against PyTorch)")
    data_name = session.selection().data
    knn = st.checkbox(
        f"Measure kNN top-1 on {data_name} for the model card",
        value=explorer.knn is not None,
        disabled=explorer.knn is None,
        help="The exported model itself is measured (after correction, when chosen), beside the unpruned model.",
    )
    linear = st.checkbox(
        f"Measure linear-probe top-1 on {data_name} for the model card",
        value=False,
        disabled=explorer.knn is None,
        help="A linear classifier trained on the exported model's frozen embeddings (DINOv1 linear evaluation).",
    )
    latency = st.checkbox("Measure and predict the latency for the model card", value=True)
    overwrite = st.checkbox("Replace the folder if it exists")
    submitted = st.form_submit_button("Export", type="primary")

if submitted:
    try:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("."):
            raise SnapViTError(f"{name!r} is not a plain folder name.", "Use letters, digits, '.', '_' and '-'.")
        with st.spinner("Exporting ..."):
            correction = None
            if correct:
                images = load_images(data_name, "train", limit=int(samples), seed=0)
                calibration = preprocess(images.images, explorer.backbone.data_config)
                correction = (CorrectionConfig(samples=int(samples), damping=damping), calibration)
            request = ExportRequest(
                mlp_sparsity,
                head_sparsity,
                out=EXPORTS_DIR / name,
                source_model=session.selection().model_id,
                correction=correction,
                onnx=onnx,
                data=data_name,
                knn=knn,
                linear=linear,
                latency=latency,
                overwrite=overwrite,
            )
            report = export_configuration(explorer, request)
        state.set_results(last_export=report)
    except SnapViTError as error:
        session.show_error(error)

report = state.result("last_export")
if report is not None and Path(report.directory).is_dir():
    st.success(f"Exported to `{report.directory}`: {', '.join(report.files)} ({report.params / 1e6:.3f} M parameters).")
    if report.onnx_max_abs_diff is not None:
        st.write(f"ONNX check: max |ONNX - PyTorch| = {report.onnx_max_abs_diff:.2e} on random inputs.")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(Path(report.directory).iterdir()):
            archive.write(path, f"{Path(report.directory).name}/{path.name}")
    st.download_button("Download as .zip", buffer.getvalue(), f"{Path(report.directory).name}.zip", "application/zip")
    st.markdown(
        "Load it anywhere with transformers: `AutoModel.from_pretrained('path/to/folder', trust_remote_code=True)`, "
        "or with torch + timm + safetensors: `from load_pruned import load_pruned, embed; "
        "model = load_pruned('path/to/folder')` (the loader script is inside the export)."
    )
    card = Path(report.directory) / "README.md"
    if card.is_file():
        with st.expander("Model card (README.md)"):
            st.markdown(card.read_text(encoding="utf-8").split("\n---\n", 1)[-1])
