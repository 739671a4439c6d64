//! The shipping workflow, version: V2Unpatched.
fn run(ctx: &cairn_sdk::Context, order: shipping::Order) -> Result<serde_json::Value, cairn_sdk::Failure> {
    shipping::shipping(ctx, order, shipping::Version::V2Unpatched)
}
cairn_sdk::workflow!(run);
