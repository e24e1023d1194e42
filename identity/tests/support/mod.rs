//! Test support: a throwaway OpenLDAP server (slapd) in a temp dir, ported from
//! `../shared/recipes/ldap/ldap_test.sh`.

pub(crate) mod slapd;
