import Foundation

/// The API's one description: `Resources/openapi.json`, embedded in the binary at build time.
/// `GET /openapi.json` serves it as is, and the contract tests validate every route's real
/// responses against its schemas.
enum OpenAPIDocument {
    static let data = Data(PackageResources.openapi_json)
    static var json: String { String(decoding: data, as: UTF8.self) }
}
