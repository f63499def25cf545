"""The model staging Job's script, run alone in its pod: it imports nothing from the rest of the package."""
