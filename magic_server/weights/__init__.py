"""The classifier's weights: finding, downloading, checking and loading them."""
