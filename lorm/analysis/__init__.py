"""Analyses of merged updates that are not part of any merge (KnOTS spec section 10: CKA alignment)."""
