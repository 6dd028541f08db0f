-- A JSON column stored as TEXT, read as JSON where it parses and as NULL where it does not (a
-- row edited outside the product), so that one odd row cannot make a whole query fail: the
-- SQLite store guards such reads with json_valid(), which PostgreSQL 15 lacks. Append-only
-- migrations: never edit this file once it has landed; add a new one.

CREATE FUNCTION json_or_null(t TEXT) RETURNS JSONB LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN t::jsonb;
EXCEPTION WHEN others THEN
    RETURN NULL;
END;
$$;
