//! Write [Cairn](https://github.com/) workflows and activities in Rust.
//!
//! A **workflow** is a plain function from a typed input to a typed result.
//! Everything it learns from outside comes through its [`Context`]: activity
//! results, timers, signals, the time, randomness. Cairn journals each of
//! those calls, so after a crash the function is run again from the top and
//! the journal answers every call it already made; the run continues where
//! it stopped. Write workflows as if they never crash, with one rule: **do
//! side effects in activities, not in the workflow**.
//!
//! ```no_run
//! use cairn_sdk::{Context, Failure};
//! use serde::{Deserialize, Serialize};
//! use std::time::Duration;
//!
//! #[derive(Deserialize)]
//! struct Input { name: String }
//!
//! #[derive(Serialize)]
//! struct Output { greeting: String }
//!
//! fn greet(ctx: &Context, input: Input) -> Result<Output, Failure> {
//!     let greeting: String = ctx.activity("greeter.greet", &input.name).get()?;
//!     ctx.sleep(Duration::from_secs(1));
//!     Ok(Output { greeting })
//! }
//!
//! cairn_sdk::workflow!(greet);
//! ```
//!
//! An **activity component** exports named functions; it may be retried, so
//! pass [`ActivityContext::idempotency_key`] to whatever it calls:
//!
//! ```no_run
//! use cairn_sdk::{ActivityContext, Failure};
//!
//! fn greet(ctx: &ActivityContext, name: String) -> Result<String, Failure> {
//!     Ok(format!("hello, {name} (attempt {})", ctx.attempt()))
//! }
//!
//! cairn_sdk::activities! { "greet" => greet }
//! ```
#![deny(missing_docs)]

mod activity;
mod failure;
mod handlers;
mod workflow;

pub use activity::ActivityContext;
pub use failure::Failure;
pub use workflow::{ActivityOptions, Context, LogLevel, Pending, RetryPolicy, Selectable};

/// Bindings generated from `wit/` for the `workflow` world.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "workflow",
        pub_export_macro: true,
        export_macro_name: "export_workflow",
        default_bindings_module: "cairn_sdk::bindings",
    });
}

/// Bindings generated from `wit/` for the `activity` world.
#[doc(hidden)]
pub mod activity_bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "activity",
        pub_export_macro: true,
        export_macro_name: "export_activity",
        default_bindings_module: "cairn_sdk::activity_bindings",
    });
}

/// Support for the export macros; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::activity::dispatch_activity;
    pub use crate::workflow::run_workflow;
    pub use serde_json;
}

/// Exports a function as this component's workflow.
///
/// The function takes `&Context` and any `serde::Deserialize` input, and
/// returns `Result<O, Failure>` for any `serde::Serialize` output. Use it
/// once per crate.
///
/// ```no_run
/// fn hello(_ctx: &cairn_sdk::Context, name: String) -> Result<String, cairn_sdk::Failure> {
///     Ok(format!("hello, {name}"))
/// }
/// cairn_sdk::workflow!(hello);
/// ```
#[macro_export]
macro_rules! workflow {
    ($function:path) => {
        struct __CairnWorkflow;

        impl $crate::bindings::Guest for __CairnWorkflow {
            fn run(
                input: ::std::string::String,
            ) -> ::std::result::Result<
                ::std::string::String,
                $crate::bindings::cairn::workflow::types::Failure,
            > {
                $crate::__private::run_workflow(input, $function)
            }
        }

        $crate::bindings::export_workflow!(__CairnWorkflow with_types_in $crate::bindings);
    };
}

/// Exports functions as this component's activities, by name.
///
/// Each function takes `&ActivityContext` and a `serde::Deserialize` input
/// and returns `Result<O, Failure>`. A workflow calls them as
/// `"<component>.<name>"`, where `<component>` is the name the component is
/// deployed under. Use it once per crate.
///
/// ```no_run
/// use cairn_sdk::{ActivityContext, Failure};
/// fn reserve(_ctx: &ActivityContext, sku: String) -> Result<u32, Failure> { Ok(1) }
/// fn release(_ctx: &ActivityContext, sku: String) -> Result<(), Failure> { Ok(()) }
/// cairn_sdk::activities! {
///     "reserve" => reserve,
///     "release" => release,
/// }
/// ```
#[macro_export]
macro_rules! activities {
    ($($name:literal => $function:path),+ $(,)?) => {
        struct __CairnActivities;

        impl $crate::activity_bindings::Guest for __CairnActivities {
            fn execute(
                name: ::std::string::String,
                input: ::std::string::String,
            ) -> ::std::result::Result<
                ::std::string::String,
                $crate::activity_bindings::cairn::workflow::types::Failure,
            > {
                let ctx = $crate::ActivityContext::current();
                match name.as_str() {
                    $($name => $crate::__private::dispatch_activity(&ctx, &input, $function),)+
                    other => $crate::__private::dispatch_activity(
                        &ctx,
                        &input,
                        |_: &$crate::ActivityContext, _: $crate::__private::serde_json::Value| {
                            ::std::result::Result::<(), _>::Err($crate::Failure::unknown_function(
                                other,
                                &[$($name),+],
                            ))
                        },
                    ),
                }
            }
        }

        $crate::activity_bindings::export_activity!(
            __CairnActivities with_types_in $crate::activity_bindings
        );
    };
}
