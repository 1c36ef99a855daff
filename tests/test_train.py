"""Training: ArcFace head, data sources, exact resume, export of the result, DDP.

Everything trains on a small synthetic identity set generated here (smooth
random colour fields, one per identity, seen through random shifts and pixel
noise), never on downloaded faces. One 24-step run on CPU is shared by the
tests that need a trained checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import run_cli
from mfn_deploy.errors import MfnError
from mfn_deploy.images import load_image, sample_photos
from mfn_deploy.models import create, names
from mfn_deploy.models.layers import GDConv
from mfn_deploy.train.arcface import IGNORE, ArcFaceHead, margin_cosine
from mfn_deploy.train.config import TrainConfig
from mfn_deploy.train.data import BatchOrder, ImageFolder, RecordDataset, open_dataset
from mfn_deploy.train.face_align import FaceAligner
from mfn_deploy.train.param_groups import global_operator_index, parameter_groups
from mfn_deploy.train.recordio import MAGIC, RecordFile, image_layout
from mfn_deploy.train.trainer import load_history, lr_at, train
from mfn_deploy.train.validation import PairsValidator, pairs_validator
from mfn_deploy.weights import load_checkpoint

MODEL = "mobilefacenet"
SIZE = (112, 112)
IDENTITIES, PER_IDENTITY = 8, 10
STEPS, RESUME_AT = 24, 22


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The test machine is shared: one thread per process is also the fastest here."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def synthetic_faces(identities: int, per_identity: int, size=SIZE, seed=0):
    """{label: [BGR uint8 images]}: distinct smooth patterns plus shifts and noise."""
    rng = np.random.default_rng(seed)
    h, w = size
    margin = 16
    out = {}
    for k in range(identities):
        field = rng.uniform(0, 255, (7, 7, 3)).astype(np.float32)
        proto = cv2.resize(field, (w + margin, h + margin), interpolation=cv2.INTER_CUBIC)
        images = []
        for _ in range(per_identity):
            dy, dx = rng.integers(0, margin + 1, 2)
            img = proto[dy : dy + h, dx : dx + w] + rng.normal(0, 12, (h, w, 3))
            images.append(np.clip(img, 0, 255).astype(np.uint8))
        out[k] = images
    return out


def write_folder(root: Path, faces: dict) -> Path:
    for label, images in faces.items():
        folder = root / f"person_{label:03d}"
        folder.mkdir(parents=True)
        for j, img in enumerate(images):
            cv2.imwrite(str(folder / f"{j:02d}.png"), img)
    return root


# --- a minimal MXNet RecordIO writer, test-only -------------------------------


def _rec_payload(labels: list[float], image: bytes = b"") -> bytes:
    if len(labels) == 1:
        head = struct.pack("<IfQQ", 0, labels[0], 0, 0)
    else:
        head = struct.pack("<IfQQ", len(labels), 0.0, 0, 0) + struct.pack(
            f"<{len(labels)}f", *labels
        )
    return head + image


def _rec_parts(payload: bytes) -> bytes:
    """MXNet's framing: split where the magic word sits 4-aligned, pad to 4."""
    magic = struct.pack("<I", MAGIC)
    cuts = [i for i in range(0, len(payload) - 3, 4) if payload[i : i + 4] == magic]
    pieces, start = [], 0
    for i in cuts:
        pieces.append(payload[start:i])
        start = i + 4
    pieces.append(payload[start:])
    out = b""
    for n, piece in enumerate(pieces):
        last = len(pieces) - 1
        flag = 0 if last == 0 else 1 if n == 0 else 3 if n == last else 2
        out += magic + struct.pack("<I", flag << 29 | len(piece)) + piece
        out += b"\0" * (-len(piece) % 4)
    return out


def write_rec(rec: Path, records: list[tuple[int, bytes]]) -> None:
    offsets, blob = [], b""
    for key, payload in records:
        offsets.append((key, len(blob)))
        blob += _rec_parts(payload)
    rec.write_bytes(blob)
    rec.with_suffix(".idx").write_text("".join(f"{k}\t{o}\n" for k, o in offsets))


def write_insightface_rec(rec: Path, faces: dict, magic_in_labels: bool = True) -> list:
    """MS1M layout: header record 0, image records, then one record per identity."""
    flat = [(label, img) for label, images in faces.items() for img in images]
    n, c = len(flat), len(faces)
    first_identity = n + 1
    records = [(0, _rec_payload([float(first_identity), float(first_identity + c)]))]
    # A second label whose bytes are the magic word forces a multi-part record.
    spare = struct.unpack("<f", struct.pack("<I", MAGIC))[0]
    for key, (label, img) in enumerate(flat, 1):
        png = cv2.imencode(".png", img)[1].tobytes()
        labels = [float(label), spare] if magic_in_labels and key == 1 else [float(label)]
        records.append((key, _rec_payload(labels, png)))
    start = 1
    for label, images in faces.items():
        records.append((first_identity + label, _rec_payload([start, start + len(images)])))
        start += len(images)
    write_rec(rec, records)
    return flat


# --- shared data and the shared training run ---------------------------------


@pytest.fixture(scope="module")
def faces():
    return synthetic_faces(IDENTITIES, PER_IDENTITY)


@pytest.fixture(scope="module")
def face_dir(tmp_path_factory, faces) -> Path:
    return write_folder(tmp_path_factory.mktemp("data") / "faces", faces)


def small_config(data: Path, out: Path, **kw) -> TrainConfig:
    settings = {
        "batch": 16,
        "iters": STEPS,
        "ckpt_every": RESUME_AT,
        "log_every": 1,
        "workers": 0,
        "device": "cpu",
    } | kw
    return TrainConfig(model=MODEL, data=data, out=out, **settings)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, face_dir, faces):
    """24 CPU steps at batch 16, a checkpoint at step 22, validation at 12 and 24."""
    pairs = []
    for k in range(IDENTITIES):
        pairs.append((faces[k][0], faces[k][1], True))
        pairs.append((faces[k][2], faces[(k + 1) % IDENTITIES][3], False))
    validator = PairsValidator(pairs, name="synthetic")
    out = tmp_path_factory.mktemp("runs") / "run"
    result = train(small_config(face_dir, out, val_every=12), validate=validator, progress=False)
    return result


# --- the ArcFace head --------------------------------------------------------


def test_margin_cosine_is_finite_monotone_and_exact_below_pi_minus_m():
    m = 0.5
    theta = torch.linspace(0, math.pi, 20001, dtype=torch.float64)
    f = margin_cosine(torch.cos(theta), m)
    assert torch.isfinite(f).all()
    assert (f[1:] <= f[:-1] + 1e-12).all(), "target logit must not grow as the angle grows"
    below = theta < math.pi - m - 1e-3
    assert torch.allclose(f[below], torch.cos(theta[below] + m), atol=1e-4)
    above = theta > math.pi - m
    expected = torch.cos(theta[above]) - m * math.sin(m)
    assert torch.allclose(f[above], expected, atol=1e-5)


@pytest.mark.parametrize("cos", [1.0, -1.0, math.cos(math.pi - 0.5), 0.999999, -0.999999])
def test_margin_cosine_gradient_is_finite_at_the_edges(cos):
    x = torch.tensor([cos], requires_grad=True)
    margin_cosine(x, 0.5).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_head_applies_the_margin_to_the_target_only_and_skips_ignored_rows():
    torch.manual_seed(0)
    head = ArcFaceHead(8, 5, scale=64, margin=0.5)
    emb = torch.randn(4, 8, requires_grad=True)
    labels = torch.tensor([0, 3, IGNORE, 4])
    logits, cos = head(emb, labels)
    assert torch.allclose(
        cos, torch.nn.functional.normalize(emb) @ torch.nn.functional.normalize(head.weight).T
    )
    expected = cos.clone() * 64
    for row, label in [(0, 0), (1, 3), (3, 4)]:
        expected[row, label] = 64 * margin_cosine(cos[row, label], 0.5)
    assert torch.allclose(logits, expected, atol=1e-5)
    loss = torch.nn.functional.cross_entropy(logits, labels, ignore_index=IGNORE)
    loss.backward()
    assert torch.isfinite(emb.grad).all() and torch.isfinite(head.weight.grad).all()
    assert emb.grad[2].abs().sum() == 0  # the ignored sample contributes nothing


def test_head_gradients_stay_finite_when_an_embedding_sits_on_its_centre_or_opposite():
    head = ArcFaceHead(4, 3)
    with torch.no_grad():
        head.weight.copy_(torch.eye(3, 4))
    emb = torch.tensor([[1.0, 0, 0, 0], [-1.0, 0, 0, 0]], requires_grad=True)
    logits, _ = head(emb, torch.tensor([0, 0]))
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 0])).backward()
    assert torch.isfinite(emb.grad).all() and torch.isfinite(head.weight.grad).all()


# --- optimizer groups and schedule --------------------------------------------


@pytest.mark.parametrize("name", names())
def test_every_registered_network_has_a_global_operator(name):
    model = create(name)
    assert global_operator_index(model) >= 0


def test_weight_decay_groups_follow_the_paper():
    model = create(MODEL)
    head = ArcFaceHead(128, 10)
    body, last = parameter_groups(model, head)
    assert (body["weight_decay"], last["weight_decay"]) == (4e-5, 4e-4)
    cut = global_operator_index(model)
    assert isinstance(model.trunk[cut], GDConv)
    after = {id(p) for p in model.trunk[cut + 1].parameters()} | {id(head.weight)}
    assert {id(p) for p in last["params"]} == after  # linear 1x1 conv + its BN + centres
    gdconv = {id(p) for p in model.trunk[cut].parameters()}
    assert gdconv <= {id(p) for p in body["params"]}
    every = [id(p) for p in [*model.parameters(), *head.parameters()]]
    assert sorted(every) == sorted(id(p) for g in (body, last) for p in g["params"])


def test_learning_rate_is_divided_by_ten_after_each_milestone():
    ms = (36000, 52000, 58000)
    assert lr_at(1, 0.1, ms) == 0.1
    assert lr_at(36000, 0.1, ms) == 0.1
    assert lr_at(36001, 0.1, ms) == pytest.approx(0.01)
    assert lr_at(52001, 0.1, ms) == pytest.approx(0.001)
    assert lr_at(60000, 0.1, ms) == pytest.approx(0.0001)


# --- data ---------------------------------------------------------------------


def test_data_order_is_a_function_of_position_and_ranks_split_the_global_batch():
    whole = list(BatchOrder(30, 8, 0, 10, seed=3))
    resumed = list(BatchOrder(30, 8, 6, 10, seed=3))
    assert resumed == whole[6:]
    ranks = [list(BatchOrder(30, 8, 0, 10, seed=3, rank=r, world=2)) for r in range(2)]
    assert [a + b for a, b in zip(*ranks, strict=True)] == whole
    epoch0 = [i for batch in whole for i, _ in batch][:30]
    assert sorted(epoch0) == list(range(30))  # each epoch is a permutation
    flips = [f for batch in whole for _, f in batch]
    assert 0.3 < np.mean(flips) < 0.7


def test_image_folder_labels_flip_and_unreadable_images(tmp_path, faces, caplog):
    root = write_folder(tmp_path / "d", {k: faces[k][:2] for k in range(3)})
    (root / "person_000" / "broken.png").write_bytes(b"not a png")
    (root / "empty_person").mkdir()
    data = ImageFolder(root, create(MODEL).input_spec)
    assert (len(data), data.num_classes) == (7, 3)
    broken = next(i for i in range(len(data)) if data.files[i].name == "broken.png")
    x, label = data[(broken, False)]
    assert label == IGNORE and x.abs().sum() == 0
    assert "broken.png" in caplog.text
    i = next(i for i in range(len(data)) if data.files[i].parent.name == "person_002")
    plain, label = data[(i, False)]
    flipped, _ = data[(i, True)]
    assert label == 2
    assert torch.equal(flipped, plain.flip(2))


def test_recordio_reader_reads_insightface_layout_written_here(tmp_path, faces):
    few = {k: faces[k][:3] for k in range(4)}
    rec = tmp_path / "train.rec"
    flat = write_insightface_rec(rec, few)
    raw = rec.read_bytes()
    assert raw.count(struct.pack("<I", MAGIC)) > len(flat) + 5  # record 1 was split in parts
    records = RecordFile(rec)
    assert records.read(1).labels[:1] == (0.0,)  # joined back across the split
    layout = image_layout(records)
    assert (layout.image_keys, layout.num_classes) == (list(range(1, 13)), 4)

    spec = create(MODEL).input_spec
    data = open_dataset(tmp_path, spec)  # the folder holding train.rec
    assert isinstance(data, RecordDataset)
    assert (len(data), data.num_classes) == (12, 4)
    for i, (label, img) in enumerate(flat):
        x, y = data[(i, False)]
        assert y == label
        expected = torch.from_numpy((img[:, :, ::-1].astype(np.float32) - 127.5) / 128)
        assert torch.equal(x, expected.permute(2, 0, 1))


def test_recordio_reader_reads_plain_layout(tmp_path, faces):
    rec = tmp_path / "plain.rec"
    imgs = [(k % 3, faces[k % 3][k]) for k in range(6)]
    write_rec(
        rec,
        [
            (k, _rec_payload([float(label)], cv2.imencode(".jpg", img)[1].tobytes()))
            for k, (label, img) in enumerate(imgs)
        ],
    )
    data = open_dataset(rec, create(MODEL).input_spec)
    assert (len(data), data.num_classes) == (6, 3)
    assert [data[(i, False)][1] for i in range(6)] == [label for label, _ in imgs]


def test_recordio_reader_rejects_bad_magic_naming_file_and_offset(tmp_path, faces):
    rec = tmp_path / "train.rec"
    write_insightface_rec(rec, {k: faces[k][:2] for k in range(2)}, magic_in_labels=False)
    idx = rec.with_suffix(".idx")
    lines = idx.read_text().splitlines()
    key, offset = lines[2].split("\t")
    lines[2] = f"{key}\t{int(offset) + 4}"
    idx.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        MfnError, match=rf"train\.rec: bad RecordIO magic .* offset {int(offset) + 4}"
    ):
        RecordFile(rec).read(int(key))
    rec.write_bytes(b"\0" * 64)
    with pytest.raises(MfnError, match="bad RecordIO magic"):
        open_dataset(rec, create(MODEL).input_spec)
    idx.unlink()
    with pytest.raises(MfnError, match=r"train\.idx is missing"):
        RecordFile(rec)


def test_data_errors_are_one_line_and_name_the_path(tmp_path, faces):
    spec = create(MODEL).input_spec
    with pytest.raises(MfnError, match="training data not found"):
        open_dataset(tmp_path / "nope", spec)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MfnError, match=r"empty: no images found"):
        open_dataset(tmp_path / "empty", spec)
    one = write_folder(tmp_path / "one", {0: faces[0][:2]})
    with pytest.raises(MfnError, match="1 identity found"):
        open_dataset(one, spec)


# --- the trained run ----------------------------------------------------------


def test_loss_falls_and_the_log_has_every_field(trained):
    run = trained.run_dir
    records = [r for r in load_history(run) if "loss" in r]
    assert [r["iter"] for r in records] == list(range(1, STEPS + 1))
    assert set(records[0]) == {"iter", "loss", "acc", "lr", "images_per_s", "eta_s", "bad_images"}
    first = np.mean([r["loss"] for r in records[:4]])
    last = np.mean([r["loss"] for r in records[-4:]])
    assert last < 0.5 * first, (first, last)
    assert records[-1]["acc"] >= 0.75
    assert sorted(p.name for p in run.iterdir()) == [
        f"checkpoint-{RESUME_AT}.pt",
        "final.pt",
        "log.jsonl",
    ]


def test_validation_runs_periodically_and_at_the_end(trained):
    vals = [r for r in load_history(trained.run_dir) if "val" in r]
    assert [r["iter"] for r in vals] == [12, 24]
    assert vals[-1]["val"]["pairs"] == 16 and 0 <= vals[-1]["val"]["accuracy"] <= 1
    assert trained.validation == vals[-1]["val"]


def test_resume_reproduces_the_uninterrupted_run_exactly(trained, face_dir, tmp_path):
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    shutil.copy(trained.run_dir / f"checkpoint-{RESUME_AT}.pt", crashed)
    result = train(small_config(face_dir, crashed, resume=True), progress=False)
    assert result.start_iteration == RESUME_AT
    full = {r["iter"]: r for r in load_history(trained.run_dir) if "loss" in r}
    again = {r["iter"]: r for r in load_history(crashed) if "loss" in r}
    assert sorted(again) == [RESUME_AT + 1, STEPS]
    for it in again:
        assert again[it]["loss"] == full[it]["loss"]  # bitwise
        assert again[it]["lr"] == full[it]["lr"]
    a = torch.load(trained.run_dir / "final.pt", weights_only=True)
    b = torch.load(crashed / "final.pt", weights_only=True)
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    assert torch.equal(a["train_state"]["head"]["weight"], b["train_state"]["head"]["weight"])


def test_resume_refuses_another_experiment_and_fresh_runs_refuse_to_overwrite(
    trained, face_dir, tmp_path
):
    with pytest.raises(MfnError, match="run directory exists; pass --resume"):
        train(small_config(face_dir, trained.run_dir), progress=False)
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(trained.run_dir / f"checkpoint-{RESUME_AT}.pt", other)
    with pytest.raises(MfnError, match="trained with --batch 16, this resume asks for --batch 8"):
        train(small_config(face_dir, other, resume=True, batch=8), progress=False)
    with pytest.raises(MfnError, match="no checkpoint to resume from"):
        train(small_config(face_dir, tmp_path, resume=True), progress=False)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lr": 0.2}, "trained with --lr 0.1, this resume asks for --lr 0.2"),
        (
            {"milestones": (5, 9)},
            "--milestones 36000,52000,58000, this resume asks for --milestones 5,9",
        ),
        ({"amp": True}, "trained with no --amp, this resume asks for --amp"),
        (
            {"iters": RESUME_AT - 1},
            f"--iters {STEPS}, this resume asks for --iters {RESUME_AT - 1}",
        ),
    ],
)
def test_resume_refuses_changed_options_naming_old_and_new(
    trained, face_dir, tmp_path, change, message
):
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(trained.run_dir / f"checkpoint-{RESUME_AT}.pt", other)
    with pytest.raises(MfnError, match=message) as e:
        train(small_config(face_dir, other, resume=True, **change), progress=False)
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in other.iterdir()) == [f"checkpoint-{RESUME_AT}.pt"]


def test_resuming_a_finished_run_does_nothing(trained, face_dir):
    before = (trained.run_dir / "log.jsonl").read_text()
    result = train(small_config(face_dir, trained.run_dir, resume=True), progress=False)
    assert result.checkpoint.name == "final.pt" and result.iterations == STEPS
    assert (trained.run_dir / "log.jsonl").read_text() == before


def test_checkpoint_exports_with_the_export_pipeline(trained, tmp_path):
    from mfn_deploy.export.plan import ExportOptions, export
    from mfn_deploy.face.samples import face_inputs

    ckpt = torch.load(trained.checkpoint, weights_only=True)
    assert ckpt["arch"] == MODEL and ckpt["input_spec"]["height"] == 112
    assert ckpt["config"]["batch"] == 16 and ckpt["config"]["milestones"] == [36000, 52000, 58000]
    result = export(
        ExportOptions(out=tmp_path / "export", checkpoint=trained.checkpoint, n_random=2),
        faces=face_inputs,
    )
    assert result.parity.ok
    manifest = json.loads((tmp_path / "export" / "manifest.json").read_text())
    assert manifest["source"]["kind"] == "checkpoint"
    assert manifest["model"] == MODEL


def write_lfw(root: Path, faces: dict) -> Path:
    """LFW's layout (root/name/name_0001.png) and a 10-pair pairs.txt."""
    for k in range(4):
        (root / f"P{k}").mkdir(parents=True)
        for j in range(2):
            cv2.imwrite(str(root / f"P{k}" / f"P{k}_{j + 1:04d}.png"), faces[k][j])
    lines = ["3 4"]  # LFW's header: sets, pairs per set
    lines += [f"P{k}\t1\t2" for k in range(4)] + [f"P{k}\t1\tP{(k + 1) % 4}\t2" for k in range(4)]
    lines += ["P0\t2\t1", "P1\t1\tP3\t1"]
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    return root / "pairs.txt"


def test_pairs_validator_reads_lfw_pairs_txt(tmp_path, faces, trained):
    root = tmp_path / "lfw"
    validate = pairs_validator(write_lfw(root, faces))
    model, _ = load_checkpoint(trained.checkpoint, None)
    result = validate(model)
    assert result["pairs"] == 10 and result["unaligned"] == 0
    assert result["accuracy"] >= 0.8  # the trained run tells these identities apart
    (root / "P3" / "P3_0001.png").unlink()
    with pytest.raises(MfnError, match=r"P3_0001\.jpg: image listed in .*pairs\.txt not found"):
        pairs_validator(root / "pairs.txt")


def test_pairs_validator_without_the_face_pipeline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mfn_deploy.evaluate", None)  # import now fails
    with pytest.raises(MfnError, match="needs the face pipeline"):
        pairs_validator(tmp_path / "pairs.txt")


def test_unaligned_photos_are_detected_and_aligned(tmp_path):
    photo = load_image(sample_photos()[0])  # a 512x512 portrait
    aligner = FaceAligner(SIZE)
    crop = aligner(photo)
    assert crop is not None and crop.shape == (*SIZE, 3)
    assert aligner(np.full((200, 200, 3), 127, np.uint8)) is None
    for name, img in [("a", photo), ("b", np.full((200, 200, 3), 127, np.uint8))]:
        (tmp_path / name).mkdir()
        cv2.imwrite(str(tmp_path / name / "0.png"), img)
    data = ImageFolder(tmp_path, create(MODEL).input_spec, align=aligner)
    x, label = data[(0, False)]
    assert label == 0 and x.shape == (3, *SIZE)
    assert data[(1, False)][1] == IGNORE  # no face: skipped, not fatal


def test_mixed_precision_path_runs(face_dir, tmp_path):
    # On CPU autocast uses bfloat16; on a GPU the same path runs float16 with a grad scaler.
    result = train(
        small_config(face_dir, tmp_path / "amp", iters=2, batch=8, amp=True), progress=False
    )
    assert all(math.isfinite(r["loss"]) for r in result.history)


# --- the command line ----------------------------------------------------------


def test_cli_help_shows_the_library_defaults_which_live_only_there():
    """The CLI takes every default from TrainConfig (``_train_option``): --help shows
    them, and no number of the recipe is written in cli.py."""
    import mfn_deploy.cli

    r = run_cli("train", "--help")
    assert r.returncode == 0, r.stderr
    help_text = " ".join(r.stdout.split())
    for name in ("batch", "iters", "lr", "val_every", "ckpt_every", "log_every", "workers"):
        value = TrainConfig.default(name)
        assert f"--{name.replace('_', '-')} " in help_text
        assert f"[default: {value}]" in help_text, name
    assert "[default: 36000,52000,58000]" in help_text
    source = Path(mfn_deploy.cli.__file__).read_text()
    assert "60000" not in source and "36000" not in source and "512" not in source


def test_cli_refuses_to_overwrite_a_run_in_one_line(trained, face_dir):
    r = run_cli("train", "--model", MODEL, "--data", face_dir, "--out", trained.run_dir)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"error: {trained.run_dir}: run directory exists; pass --resume to continue it"
    ]


# --- two processes ------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_on_cpu_trains_from_recordio_validates_and_stays_in_sync(tmp_path, faces):
    rec = tmp_path / "data" / "train.rec"
    rec.parent.mkdir()
    write_insightface_rec(rec, {k: faces[k][:4] for k in range(4)})
    out = tmp_path / "ddp"
    env = os.environ | {"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(_free_port()),
        "-m",
        "mfn_deploy",
        "train",
        "--model",
        MODEL,
        "--data",
        str(rec),
        "--out",
        str(out),
        "--batch",
        "8",
        "--iters",
        "4",
        "--ckpt-every",
        "2",
        "--log-every",
        "1",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--val",
        str(write_lfw(tmp_path / "lfw", faces)),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 processes" in r.stdout and "replicas in sync" in r.stdout
    records = load_history(out)
    assert [x["iter"] for x in records] == [1, 2, 3, 4, 4]  # the last is validation
    assert all(math.isfinite(x["loss"]) for x in records[:4])
    assert records[4]["val"]["pairs"] == 10
    assert "validation on pairs.txt: accuracy" in r.stdout
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-2.pt", "final.pt", "log.jsonl"]
    assert torch.load(out / "final.pt", weights_only=True)["train_state"]["iteration"] == 4
