"""Array operations shared by every stage (numpy or torch, whichever the caller passes)."""
