"""Loss discovery: a TPE search over the I-Con space per dataset on val, then the top losses confirmed on test."""
