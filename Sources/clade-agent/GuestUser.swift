#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CladeGuestProtocol

/// A user to run a command as, read from the guest's own `/etc/passwd` and `/etc/group` (the
/// agent links no NSS modules, and the image's files are the truth inside the guest).
enum GuestUser {
    static func resolve(_ spec: String, passwd: String = "/etc/passwd", group: String = "/etc/group") throws -> UserDatabase.Account {
        func read(_ path: String) -> String? { FileManager.default.contents(atPath: path).map { String(decoding: $0, as: UTF8.self) } }
        do {
            return try UserDatabase(passwd: read(passwd), group: read(group)).resolve(spec)
        } catch {
            throw CommandError(description: "\(error) in this guest")
        }
    }
}

extension UserDatabase.Account {
    /// The login-like variables a shell would set for this user.
    var environment: [String: String] {
        var result = ["HOME": home, "USER": name, "LOGNAME": name]
        if let shell, !shell.isEmpty { result["SHELL"] = shell }
        return result
    }
}
