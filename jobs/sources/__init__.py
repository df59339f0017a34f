"""What a run reads: the input sources and their row checks, the demo data, the encoder model's identity, and
how much one interaction weighs."""
