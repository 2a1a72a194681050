"""Page 1: pick the backbone, device and data; see the backbone's summary."""

from __future__ import annotations

import streamlit as st

from snapvit_core.data import DATA_SPEC_HELP, parse_data_spec
from snapvit_core.engine.backbones import EMBEDDED_ID
from snapvit_core.errors import SnapViTError
from snapvit_core.evaluation.metrics import analytic_flops, count_parameters
from snapvit_core.presets import BACKBONE_PRESETS
from ui import session, shared
from ui.labels import card, card_row, flops_unit, short_number
from ui.literal import code, escape
from ui.long_pass import render
from ui.state import Selection

OTHER_TIMM = "Other timm ViT name ..."
LOCAL_DIR = "Local checkpoint directory ..."
DATA_KINDS = {
    "embedded": "Embedded cluttered digits (offline)",
    "folder": "Image folder (one sub-folder per class)",
    "hf": "Hugging Face dataset (local cache) or saved directory",
    "procedural": "Procedural images (label-free: scoring only, no kNN)",
}

st.title("Backbone & data")
st.caption(
    "SnapViT prunes MLP neurons and attention heads of a pretrained ViT without labels or retraining. "
    "Pick a backbone and the data used for scoring and kNN evaluation."
)
current = session.selection()

preset_names = list(BACKBONE_PRESETS) + [OTHER_TIMM, LOCAL_DIR]
preset_ids = list(BACKBONE_PRESETS.values())
if current.model_id in preset_ids:
    preset_index = preset_ids.index(current.model_id)
else:
    preset_index = preset_names.index(LOCAL_DIR if "/" in current.model_id else OTHER_TIMM)

with st.form("backbone_form"):
    left, right = st.columns(2)
    with left:
        preset = st.selectbox("Backbone", preset_names, index=preset_index)
        custom = st.text_input(
            "timm name or checkpoint directory (for the last two choices)",
            value="" if current.model_id in preset_ids else current.model_id,
            placeholder="vit_small_patch16_224.augreg_in1k  or  /path/to/checkpoint_dir",
        )
        random_init = st.checkbox(
            "Random weights (architecture only: timing and FLOPs, no meaningful accuracy)", value=current.random_init
        )
        device = st.selectbox("Device", ["auto", "cpu", "cuda"], index=["auto", "cpu", "cuda"].index(current.device))
    with right:
        current_spec = parse_data_spec(current.data)
        kind = st.selectbox(
            "Data", list(DATA_KINDS), format_func=DATA_KINDS.get, index=list(DATA_KINDS).index(current_spec.kind)
        )
        location = st.text_input(
            "Folder path or dataset name (for image folder / Hugging Face)",
            value=current_spec.location,
            placeholder="/data/pets  or  cifar10",
        )
        st.caption(f"Data sources: `{DATA_SPEC_HELP}`. Folders without train/ and test/ are split 80/20 per class.")
    submitted = st.form_submit_button("Load", type="primary")

if submitted:
    model_id = BACKBONE_PRESETS.get(preset) or custom.strip()
    data = kind if kind in ("embedded", "procedural") else f"{kind}:{location.strip()}"
    try:
        if not model_id:
            raise SnapViTError("No model name or directory was given.", "Type a timm name or a checkpoint directory.")
        parse_data_spec(data)
        session.set_selection(Selection(model_id, random_init, device, data))
    except SnapViTError as error:
        session.show_error(error)

choice = session.selection()
backbone = session.guarded_backbone()
if backbone is None:
    st.stop()

shape = backbone.shape
st.subheader(escape(choice.model_id, 200) + (" (random weights)" if choice.random_init else ""))  # literal text
row = card_row()
cards = [row] * 5
card(cards[0], "Blocks x heads", f"{shape.num_blocks} x {shape.num_heads}", help="transformer blocks x heads per block")
card(
    cards[1], "Width", f"{shape.embed_dim} / {shape.mlp_hidden}", help="embedding width / MLP hidden neurons per block"
)
flops_value, flops_label = flops_unit(analytic_flops(backbone.model))
card(
    cards[2], "Params (M)", short_number(count_parameters(backbone.model) / 1e6), help="embedding path, heads excluded"
)
card(cards[3], f"FLOPs ({flops_label})", short_number(flops_value), help="per image at the input size")
card(cards[4], "Input (px)", f"{backbone.image_size}", help="input resolution from the backbone's data config")
st.caption(
    f"Device: {code(choice.resolved_device)} · head dim {shape.head_dim} · data {code(choice.data)} · "
    f"mean {tuple(round(v, 3) for v in backbone.data_config.get('mean', ()))}"
)


def keep_unpruned(snapshot) -> None:
    """Nothing to store: the finished pass is shared (``ui.shared.unpruned_knn_job``); the page reruns."""


if not session.has_labelled_data():
    st.info("Procedural data has no labels: scoring and search work, kNN accuracy is not measured.")
elif choice.random_init and not session.knn_on_random_checkbox():
    st.info(
        "Random weights: kNN accuracy is skipped (an untrained model's accuracy is meaningless, and embedding "
        "the data is slow on a big backbone). FLOPs, parameters and latency are exact.",
        icon=":material/info:",
    )
else:
    try:
        with st.spinner("Preparing the kNN data ..."):
            splits = session.knn_splits()
    except SnapViTError as error:
        session.show_error(error)
        st.stop()
    job = session.unpruned_knn_job()
    snapshot = job.snapshot()
    if snapshot.state == "done":
        st.metric(
            "Unpruned kNN top-1",
            f"{100 * snapshot.result.knn_top1:.2f} %",
            help=f"k=20 nearest neighbours, uniform vote; {splits.describe()}",
        )
        st.caption(f"{splits.describe()} · kNN on {snapshot.result.knn_set} ({snapshot.seconds:.1f} s)")
    elif snapshot.state == "running":
        st.caption(f"Embedding the kNN data with the unpruned model: {splits.describe()}")
        render("unpruned_knn", "Embedding the kNN data", keep_unpruned)
    else:
        if snapshot.state == "cancelled":
            st.warning("Embedding the kNN data was cancelled.")
        else:
            st.error(snapshot.error)
        if st.button("Embed the kNN data"):
            session.unpruned_knn_job(restart=True)
            st.rerun()

if choice.model_id == EMBEDDED_ID and not choice.random_init:
    st.caption(
        "The embedded backbone is a 6-block, 6-head ViT trained by `scripts/train_embedded.py` on cluttered "
        "scikit-learn digits (1257 train / 540 test, fixed split); it works fully offline."
    )
with st.expander("Data-free scores for a first look"):
    st.write(
        "The explorer starts with the shipped searched scores (xNES) where the backbone has them, else with "
        f"magnitude scores. Now: **{session.scores()[1]}**. Magnitude scores need no data: use them for a "
        "first look at a backbone without shipped scores, or to see what SnapViT's search adds."
    )
    if st.button("Use magnitude scores"):
        session.set_scores(
            shared.data_free(session.selection(), "magnitude"), "magnitude (data-free)", scores_id="method:magnitude"
        )
        st.success("Magnitude scores selected.")
