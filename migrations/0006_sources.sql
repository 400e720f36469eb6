-- Sources (issue 13): what a switch sent that could not be mapped to a CDR, set aside with the
-- reason for the operator to list and re-drive; and each source's position in its input (a
-- file offset), kept in the transaction of the records it read.
CREATE TABLE rejects (
    id         INTEGER PRIMARY KEY,
    source     TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    raw        TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX rejects_source ON rejects (source, id);

CREATE TABLE source_marks (
    source     TEXT    PRIMARY KEY,
    mark       TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
