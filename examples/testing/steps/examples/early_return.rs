//! The `steps` workflow, variant: EarlyReturn.
fn run(ctx: &cairn_sdk::Context, input: serde_json::Value) -> Result<serde_json::Value, cairn_sdk::Failure> {
    steps::run(ctx, input, steps::Variant::EarlyReturn)
}
cairn_sdk::workflow!(run);
