import Foundation

/// A JSON value that keeps booleans, integers and other numbers apart (JSONSerialization on
/// Linux does not), for schema checks.
enum JSONValueForTests: Decodable, Equatable {
    case null, bool(Bool), integer(Int64), number(Double), string(String), array([JSONValueForTests]), object([String: JSONValueForTests])

    init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() { self = .null }
        else if let value = try? container.decode(Bool.self) { self = .bool(value) }
        else if let value = try? container.decode(Int64.self) { self = .integer(value) }
        else if let value = try? container.decode(Double.self) { self = .number(value) }
        else if let value = try? container.decode(String.self) { self = .string(value) }
        else if let value = try? container.decode([JSONValueForTests].self) { self = .array(value) }
        else { self = .object(try container.decode([String: JSONValueForTests].self)) }
    }

    subscript(key: String) -> JSONValueForTests? { if case .object(let object) = self { return object[key] } else { return nil } }
    var string: String? { if case .string(let value) = self { return value } else { return nil } }
    var double: Double? {
        switch self {
        case .integer(let value): return Double(value)
        case .number(let value): return value
        default: return nil
        }
    }
    var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "boolean"
        case .integer: return "integer"
        case .number: return "number"
        case .string: return "string"
        case .array: return "array"
        case .object: return "object"
        }
    }
}

/// Checks JSON values against the schemas of `openapi.json`: the subset of JSON Schema the
/// document uses (`type` as a name or a list, `properties`, `required`, `items`,
/// `additionalProperties`, `enum`, `minimum`, `maximum`, `$ref` to `#/components/schemas`).
/// A keyword it does not know fails the check, so the document cannot outgrow it unnoticed.
struct OpenAPISchemaValidator {
    let document: JSONValueForTests

    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    static let knownKeywords: Set<String> = [
        "type", "properties", "required", "items", "additionalProperties", "enum", "minimum", "maximum", "$ref", "description",
        // An annotation (binary bodies); nothing to check in JSON.
        "format",
    ]

    init(json: Data) throws { document = try JSONDecoder().decode(JSONValueForTests.self, from: json) }

    /// The schema of the JSON body `method path` answers with `status`; nil when that response has
    /// no body. Throws when the document lists neither the route nor that status for it.
    func responseSchema(method: String, path: String, status: Int) throws -> JSONValueForTests? {
        try responseContent(method: method, path: path, status: status)?.schema
    }

    /// The media type the document gives the response, and its schema.
    func responseContent(method: String, path: String, status: Int) throws -> (mediaType: String, schema: JSONValueForTests?)? {
        guard case .object(let paths)? = document["paths"] else { throw Failure("the document has no paths") }
        guard let template = paths.keys.first(where: { Self.matches(template: $0, path: path) }),
              let operation = paths[template]?[method.lowercased()]
        else { throw Failure("\(method) \(path) is not in the document") }
        guard let response = operation["responses"]?["\(status)"] else {
            throw Failure("\(method) \(template) answered \(status), which the document does not list")
        }
        guard case .object(let content)? = response["content"], let mediaType = content.keys.sorted().first else { return nil }
        return (mediaType, content[mediaType]?["schema"])
    }

    static func matches(template: String, path: String) -> Bool {
        let pathOnly = path.split(separator: "?", maxSplits: 1).first.map(String.init) ?? path
        let expected = template.split(separator: "/", omittingEmptySubsequences: false)
        let actual = pathOnly.split(separator: "/", omittingEmptySubsequences: false)
        guard expected.count == actual.count else { return false }
        return zip(expected, actual).allSatisfy { $0.hasPrefix("{") || $0 == $1 }
    }

    /// Throws the first way `value` breaks `schema`, naming where (`$.field[2]`).
    func validate(_ value: JSONValueForTests, against schema: JSONValueForTests, at location: String = "$") throws {
        guard case .object(let keywords) = schema else { throw Failure("\(location): the schema is not an object") }
        for keyword in keywords.keys where !Self.knownKeywords.contains(keyword) {
            throw Failure("\(location): the validator does not know the keyword '\(keyword)'")
        }
        if let reference = keywords["$ref"]?.string {
            let name = reference.replacingOccurrences(of: "#/components/schemas/", with: "")
            guard let target = document["components"]?["schemas"]?[name] else { throw Failure("\(location): unresolvable \(reference)") }
            return try validate(value, against: target, at: location)
        }
        if let type = keywords["type"] {
            let allowed: [String]
            if case .array(let names) = type { allowed = names.compactMap(\.string) } else { allowed = [type.string ?? ""] }
            let actual = value.typeName
            guard allowed.contains(actual) || (actual == "integer" && allowed.contains("number")) else {
                throw Failure("\(location): expected \(allowed.joined(separator: " or ")), got \(actual)")
            }
        }
        if case .array(let choices)? = keywords["enum"], !choices.contains(value) {
            throw Failure("\(location): \(value) is not one of the documented values")
        }
        if let number = value.double {
            if let minimum = keywords["minimum"]?.double, number < minimum { throw Failure("\(location): \(number) is below \(minimum)") }
            if let maximum = keywords["maximum"]?.double, number > maximum { throw Failure("\(location): \(number) is above \(maximum)") }
        }
        if case .object(let object) = value {
            if case .array(let required)? = keywords["required"] {
                for name in required.compactMap(\.string) where object[name] == nil {
                    throw Failure("\(location): the required field '\(name)' is missing")
                }
            }
            for (key, field) in object {
                if let property = keywords["properties"]?[key] {
                    try validate(field, against: property, at: "\(location).\(key)")
                } else if let additional = keywords["additionalProperties"], case .object = additional {
                    try validate(field, against: additional, at: "\(location).\(key)")
                }
            }
        }
        if case .array(let elements) = value, let items = keywords["items"] {
            for (index, element) in elements.enumerated() { try validate(element, against: items, at: "\(location)[\(index)]") }
        }
    }
}
