-- Pipeline secrets set through the API, sealed by gantry-secrets (XChaCha20-Poly1305): the store
-- holds only the nonce and the ciphertext, never a plaintext. `project` is the configured
-- project's name; no foreign key, since projects live in gantry.toml, not in the database.
-- BLOB is BYTEA in PostgreSQL.
CREATE TABLE secrets (
    project    TEXT NOT NULL,
    name       TEXT NOT NULL,
    nonce      BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (project, name)
) WITHOUT ROWID;
