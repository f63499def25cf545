"""The model staging Job's script, run alone in its pod from a ConfigMap: its modules import only one another."""
