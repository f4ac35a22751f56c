-- connbudget 1.0 -> 1.1: applications bound to roles.  Released scripts are
-- never edited.

\echo Use "ALTER EXTENSION connbudget UPDATE TO '1.1'" to load this file. \quit

ALTER TABLE connbudget.application_limits
    ADD COLUMN roles name[]
        CONSTRAINT roles_not_empty_list
            CHECK (pg_catalog.cardinality(roles) OPERATOR(pg_catalog.>=) 1)
        CONSTRAINT roles_at_most_16
            CHECK (pg_catalog.cardinality(roles) OPERATOR(pg_catalog.<=) 16)
        CONSTRAINT roles_one_dimension
            CHECK (pg_catalog.array_ndims(roles) OPERATOR(pg_catalog.=) 1)
        CONSTRAINT roles_no_null
            CHECK (pg_catalog.array_ndims(roles) OPERATOR(pg_catalog.<>) 1
                   OR pg_catalog.array_position(roles, NULL) IS NULL)
        CONSTRAINT roles_no_empty_name
            CHECK (pg_catalog.array_ndims(roles) OPERATOR(pg_catalog.<>) 1
                   OR pg_catalog.array_position(roles, ''::pg_catalog.name) IS NULL);

COMMENT ON COLUMN connbudget.application_limits.roles IS
    'Roles (or members of them) that may connect as this application; NULL for any role';
