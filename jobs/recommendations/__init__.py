"""Top-k lists as DataFrames: one scorer over a catalogue, with seen items masked, reasons and re-ranking."""
