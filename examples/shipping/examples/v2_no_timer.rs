//! The shipping workflow, version: V2NoTimer.
fn run(ctx: &cairn_sdk::Context, order: shipping::Order) -> Result<serde_json::Value, cairn_sdk::Failure> {
    shipping::shipping(ctx, order, shipping::Version::V2NoTimer)
}
cairn_sdk::workflow!(run);
