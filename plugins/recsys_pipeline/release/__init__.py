"""Where releases are decided and published: the gate's decision, the model card, the release in
object storage with its manifest and champion pointer, the recommendations table in MySQL, and
what comes after (verify, rollback, the champion's history)."""
