"""The model room: typed, validated configuration objects, the ConfigStore and immutable snapshots.

Imports only the standard library (plus re2/jsonschema for validation); never sources, translate or xds.
"""
