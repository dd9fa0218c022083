"""Generic ADS machinery: resources by type URL, hashes, subscriptions, nonce/ACK/NACK, Delta and
State-of-the-World handlers, and a debouncer. Knows nothing about Istio or the model."""
