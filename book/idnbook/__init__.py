"""What only the book needs, apart from the library ``idnhelpers`` (which never imports it): a
chapter's set-up, parameter checks and claims tables (``chapter``), its page-width figures
(``plots``) and its parameter profiles in ``notebooks/profiles`` (``profiles``)."""
