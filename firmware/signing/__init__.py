"""The signing core: CMS and PDF signatures made with the token key, timestamps and LTV data."""
