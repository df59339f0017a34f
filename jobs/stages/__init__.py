"""The stages, one thin module each, in pipeline order: validate, embed, train, profile, segment,
recommend, audience, and evaluate. Each reads what earlier stages wrote, calls the shared libraries, and
writes its own outputs; no stage imports another (tests/test_layout.py keeps that rule)."""
