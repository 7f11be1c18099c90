import CladeStore

/// Validation of user-chosen names (images, tags) and generated ids.
///
/// Names become file names in the store, so anything that could escape a directory
/// (`/`, `..`, a leading dot) or confuse a shell is refused up front.
public enum Names {
    public static let maxLength = 64

    /// Accepts `[A-Za-z0-9][A-Za-z0-9._-]{0,63}` that is not `.`/`..`-like.
    public static func validate(_ name: String, kind: String) throws {
        guard !name.isEmpty else { throw StoreError.invalidName(name, reason: "\(kind) names cannot be empty") }
        guard name.count <= maxLength else {
            throw StoreError.invalidName(name, reason: "\(kind) names are at most \(maxLength) characters")
        }
        guard let first = name.unicodeScalars.first, first.properties.isASCIIHexDigit || ("a"..."z").contains(first) || ("A"..."Z").contains(first) else {
            throw StoreError.invalidName(name, reason: "\(kind) names start with a letter or digit")
        }
        let allowed = name.unicodeScalars.allSatisfy { scalar in
            ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar) || ("0"..."9").contains(scalar)
                || scalar == "." || scalar == "_" || scalar == "-"
        }
        guard allowed, !name.contains("..") else {
            throw StoreError.invalidName(name, reason: "\(kind) names may contain only letters, digits, '.', '_' and '-' (no '/' or '..')")
        }
    }

    /// A new random sandbox id: 12 lowercase hex digits.
    public static func newSandboxID() -> String {
        (0..<12).map { _ in String(UInt8.random(in: 0..<16), radix: 16) }.joined()
    }

    /// Sandbox ids are generated, so anything else is refused (including path-like input).
    public static func validateSandboxID(_ id: String) throws {
        guard id.count == 12, id.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else {
            throw StoreError.invalidName(id, reason: "sandbox ids are 12 lowercase hex digits, as printed by `clade ls`")
        }
    }
}
