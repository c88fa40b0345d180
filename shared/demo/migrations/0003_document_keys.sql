-- A document's S3 key names it (documents/<kind>/<subject>.pdf, packages/<name>.zip): one row per key, so recording a
-- re-rendered document or a re-built package updates its row. Packages have no subject_id, and (kind, subject_id)
-- does not tell NULLs apart, so the key is what their upsert conflicts on.
CREATE UNIQUE INDEX documents_s3_key ON demo.documents (s3_key);
