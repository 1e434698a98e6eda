//! The pages, one module each; every action calls [`portcullis_admin::ops`].

pub(crate) mod agents;
pub(crate) mod credentials;
pub(crate) mod login;
pub(crate) mod policies;
pub(crate) mod requests;
pub(crate) mod simulate;
pub(crate) mod usage;
