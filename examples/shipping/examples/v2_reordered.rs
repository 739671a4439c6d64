//! The shipping workflow, version: V2Reordered.
fn run(ctx: &cairn_sdk::Context, order: shipping::Order) -> Result<serde_json::Value, cairn_sdk::Failure> {
    shipping::shipping(ctx, order, shipping::Version::V2Reordered)
}
cairn_sdk::workflow!(run);
