"""Helpers for the end-to-end tests in tests/e2e/ (clients, scripted upstream, crypto, PKI)."""
from pathlib import Path

#: The repository root (tests/e2e/support/ is three levels down).
REPO = Path(__file__).resolve().parents[3]
