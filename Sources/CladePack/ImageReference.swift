import Foundation

extension RegistryReference {
    /// Docker Hub's registry API host, which `docker.io` names stand for.
    public static let dockerHubAPIHost = "registry-1.docker.io"

    /// Parses a container image name the way `docker pull` reads it: `python:3.12-slim` is
    /// `docker.io/library/python:3.12-slim`, `user/app` is `docker.io/user/app:latest`, and a
    /// first component with a `.` or `:` (or `localhost`) is a registry host.
    public init(image text: String) throws {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty else { throw PackError.invalidReference(text, reason: "the image name is empty") }
        var name = trimmed
        for scheme in ["docker://", "oci://"] where name.hasPrefix(scheme) { name.removeFirst(scheme.count) }
        let first = name.split(separator: "/", maxSplits: 1).first.map(String.init) ?? name
        let hasHost = name.contains("/") && (first.contains(".") || first.contains(":") || first == "localhost")
        if !hasHost {
            name = "docker.io/" + (name.contains("/") ? name : "library/" + name)
        }
        try self.init(parsing: name)
        if host == "docker.io" || host == "index.docker.io" { host = Self.dockerHubAPIHost }
    }

    /// The name users know: `docker.io/library/python:3.12-slim` rather than the API host.
    public var imageName: String {
        let shownHost = host == Self.dockerHubAPIHost ? "docker.io" : host
        return "\(shownHost)/\(repository)\(isDigest ? "@" : ":")\(reference)"
    }
}
