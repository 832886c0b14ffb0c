//! Release engineering through the balancer: progressive canaries that
//! judge themselves against their baseline, and mirrored traffic to a
//! shadow pool. Sticky splits and blue-green switches are plain route
//! targets ([`crate::route`]); redirects and rewrites are applied on the
//! request path ([`crate::http`]).

pub mod canary;
pub mod mirror;
pub mod view;
