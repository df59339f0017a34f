"""Audiences for campaigns: requests checked like every input, each one's target vector, and the users
to contact for it, scored on executors, with reasons, caps and the segments they fall in."""
