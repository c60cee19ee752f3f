//! Prints the OpenAPI document (`tollgate::openapi`); `scripts/build` writes it to
//! `build/assets/openapi.json`, served at `/openapi.json`.

fn main() {
    let document = tollgate::openapi::document();
    println!("{}", serde_json::to_string_pretty(&document).expect("a JSON value always serialises"));
}
