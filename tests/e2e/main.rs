//! End-to-end tests: the real gateway over HTTP and WebSocket on 127.0.0.1.

mod api;
mod bad_input;
mod broadcasts;
mod contacts;
mod crash;
mod discord;
mod dispatcher;
mod faults;
mod feed;
mod ingress;
mod secrets;
mod sms;
mod store_faults;
mod supervisor;
mod telegram;
mod tenancy;
mod webhooks;
mod whatsapp;
