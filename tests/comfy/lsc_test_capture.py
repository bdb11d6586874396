"""Values captured by the test-only Capture node during a prompt, keyed by the node's label."""

CAPTURED: dict = {}
