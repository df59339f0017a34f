"""Vector spaces and user vectors in the text space: the column arithmetic every stage shares."""
