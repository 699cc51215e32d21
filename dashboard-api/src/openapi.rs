//! The OpenAPI document, generated from the handlers' annotations.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::*;

#[derive(OpenApi)]
#[openapi(
    info(title = "Switchboard", description = "Multi-platform bot gateway: REST API and event feed."),
    paths(
        health::healthz, health::readyz, health::metrics,
        tenants::list, tenants::create, tenants::list_keys, tenants::create_key, tenants::revoke_key,
        bots::list, bots::get, bots::create, bots::update, bots::delete, bots::start, bots::stop, bots::restart,
        bots::bulk_action, bots::balance, bots::test,
        contacts::list, contacts::get, contacts::create, contacts::update, contacts::delete,
        contacts::bulk,
        groups::list, groups::create, groups::get, groups::update, groups::delete,
        groups::add_members, groups::remove_member, import::import,
        broadcasts::create, broadcasts::list, broadcasts::get, broadcasts::update,
        broadcasts::cancel, broadcasts::resend_failed, broadcasts::recipients,
        stats::stats,
        conversations::list, conversations::get, conversations::messages,
        messages::create, messages::list, messages::get, messages::media,
        events::list, crate::feed::feed,
        webhooks::list, webhooks::create, webhooks::get, webhooks::update, webhooks::delete, webhooks::dead_letters,
    ),
    components(schemas(crate::problem::Problem)),
    modifiers(&BearerAuth),
    tags(
        (name = "health"), (name = "tenants", description = "Operator endpoints (admin token) and tenant API keys"),
        (name = "bots"), (name = "contacts"), (name = "groups"), (name = "broadcasts"), (name = "stats"), (name = "conversations"), (name = "messages"), (name = "events"), (name = "webhooks"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// `GET /openapi.json`
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
