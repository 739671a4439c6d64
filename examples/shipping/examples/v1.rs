//! The shipping workflow, version: V1.
fn run(ctx: &cairn_sdk::Context, order: shipping::Order) -> Result<serde_json::Value, cairn_sdk::Failure> {
    shipping::shipping(ctx, order, shipping::Version::V1)
}
cairn_sdk::workflow!(run);
