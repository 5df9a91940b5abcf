"""Lead-capture forms: defined here, embedded on websites, posted to a public endpoint."""
