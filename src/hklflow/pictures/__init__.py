"""What users look at: every picture of the steps, the slices of volumes they draw, and the labels of previews."""
