"""What a source checkpoint holds: headers, formats, roles and the units a policy decides."""
