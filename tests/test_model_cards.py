import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_committed_model_cards_match_the_registry():
    spec = importlib.util.spec_from_file_location("cards", ROOT / "tools" / "write_model_cards.py")
    cards = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cards)
    committed = (ROOT / "models" / "README.md").read_text()
    assert committed == cards.render(), "run: .venv/bin/python tools/write_model_cards.py"
