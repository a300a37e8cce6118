-- A delivery makes at most one run. The dispatcher commits the run and then records the
-- delivery's outcome; a crash between the two leaves the delivery pending with its run made, and
-- the restart must find that run instead of making a second. This index backs that up.
CREATE UNIQUE INDEX runs_by_delivery ON runs (delivery_id) WHERE delivery_id IS NOT NULL;
