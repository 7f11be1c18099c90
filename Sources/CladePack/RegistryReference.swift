import CladeStore
import Foundation

/// `HOST[:PORT]/REPOSITORY[:TAG|@sha256:HEX]`, the way OCI registries name content.
public struct RegistryReference: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var repository: String
    /// A tag or a `sha256:` digest.
    public var reference: String

    public var isDigest: Bool { reference.hasPrefix("sha256:") }
    public var description: String { "\(host)/\(repository)\(isDigest ? "@" : ":")\(reference)" }

    /// Prefixes a reference may carry, as skopeo and other tools write them; each is dropped.
    static let schemes = ["https://", "http://", "docker://", "oci://"]

    /// Whether `text` names a registry rather than a local tag: a scheme, or a first path
    /// component that is a host (has a '.' or a ':', or is `localhost`), as Docker tells them
    /// apart. `../x` and `a/b` are not references; they stay (invalid) local names.
    public static func namesRegistry(_ text: String) -> Bool {
        if schemes.contains(where: text.hasPrefix) { return true }
        guard let slash = text.firstIndex(of: "/") else { return false }
        let first = text[..<slash]
        if first == "." || first == ".." { return false }
        return first.contains(".") || first.contains(":") || first == "localhost"
    }

    public init(parsing text: String) throws {
        var rest = text
        for scheme in Self.schemes where rest.hasPrefix(scheme) { rest.removeFirst(scheme.count) }
        guard let slash = rest.firstIndex(of: "/") else { throw PackError.invalidReference(text, reason: "no repository after the host") }
        host = String(rest[..<slash])
        var path = String(rest[rest.index(after: slash)...])
        guard !host.isEmpty, host.allSatisfy({ $0.isLetter || $0.isNumber || ".-:[]".contains($0) }) else {
            throw PackError.invalidReference(text, reason: "'\(host)' is not a host name")
        }
        if let at = path.firstIndex(of: "@") {
            reference = String(path[path.index(after: at)...])
            path = String(path[..<at])
            do { _ = try Digest(parsing: reference) } catch { throw PackError.invalidReference(text, reason: "'\(reference)' is not a sha256 digest") }
        } else if let colon = path.lastIndex(of: ":") {
            reference = String(path[path.index(after: colon)...])
            path = String(path[..<colon])
        } else {
            reference = "latest"
        }
        repository = path
        let componentOK: (Substring) -> Bool = { part in
            !part.isEmpty && part.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || "._-".contains($0) } && part != "." && part != ".."
        }
        guard repository.split(separator: "/", omittingEmptySubsequences: false).allSatisfy(componentOK) else {
            throw PackError.invalidReference(text, reason: "repository '\(repository)' must be lowercase path components of letters, digits, '.', '_' or '-'")
        }
        if !isDigest {
            guard reference.count <= 128, let first = reference.first, first.isLetter || first.isNumber || first == "_",
                reference.allSatisfy({ $0.isLetter || $0.isNumber || "._-".contains($0) }), reference.allSatisfy(\.isASCII)
            else { throw PackError.invalidReference(text, reason: "tag '\(reference)' is not a valid tag") }
        }
    }

    /// The same repository, another tag or digest.
    public func with(reference: String) -> RegistryReference {
        var copy = self
        copy.reference = reference
        return copy
    }
}

/// A `WWW-Authenticate` challenge: scheme and parameters.
struct AuthChallenge: Equatable {
    var scheme: String
    var parameters: [String: String]

    /// Parses `Bearer realm="https://auth",service="registry",scope="repository:x:pull"`.
    init?(header: String) {
        let trimmed = header.trimmingCharacters(in: .whitespaces)
        guard let space = trimmed.firstIndex(of: " ") else {
            guard !trimmed.isEmpty else { return nil }
            scheme = trimmed.lowercased()
            parameters = [:]
            return
        }
        scheme = trimmed[..<space].lowercased()
        var parameters: [String: String] = [:]
        var rest = trimmed[trimmed.index(after: space)...]
        while !rest.isEmpty {
            rest = rest.drop { $0 == " " || $0 == "," }
            guard let equals = rest.firstIndex(of: "=") else { break }
            let key = rest[..<equals].trimmingCharacters(in: .whitespaces).lowercased()
            rest = rest[rest.index(after: equals)...]
            var value = ""
            if rest.first == "\"" {
                rest = rest.dropFirst()
                var escaped = false
                while let character = rest.first {
                    rest = rest.dropFirst()
                    if escaped { value.append(character); escaped = false; continue }
                    if character == "\\" { escaped = true; continue }
                    if character == "\"" { break }
                    value.append(character)
                }
            } else {
                let end = rest.firstIndex(of: ",") ?? rest.endIndex
                value = rest[..<end].trimmingCharacters(in: .whitespaces)
                rest = rest[end...]
            }
            parameters[key] = value
        }
        self.parameters = parameters
    }
}
