#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A user to run a command as, read from the guest's own `/etc/passwd` and `/etc/group` (the
/// agent links no NSS modules, and the image's files are the truth inside the guest).
struct GuestUser: Equatable {
    var name: String
    var uid: UInt32
    var gid: UInt32
    var groups: [UInt32]
    var home: String
    var shell: String?

    /// Resolves `name`, `uid`, `name:group` or `uid:gid`.
    static func resolve(_ spec: String, passwd: String = "/etc/passwd", group: String = "/etc/group") throws -> GuestUser {
        let parts = spec.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        guard let userPart = parts.first, !userPart.isEmpty else { throw CommandError(description: "user '\(spec)' is empty") }
        let users = table(passwd)
        let groups = table(group)
        var user: GuestUser
        if let row = users.first(where: { $0.count >= 6 && ($0[0] == userPart || (UInt32(userPart) != nil && $0[2] == userPart)) }),
            let uid = UInt32(row[2]), let gid = UInt32(row[3])
        {
            user = GuestUser(name: row[0], uid: uid, gid: gid, groups: [], home: row[5].isEmpty ? "/" : row[5], shell: row.count > 6 ? row[6] : nil)
        } else if let uid = UInt32(userPart) {
            user = GuestUser(name: userPart, uid: uid, gid: 0, groups: [], home: "/", shell: nil)
        } else {
            throw CommandError(description: "user '\(userPart)' does not exist in the guest's /etc/passwd")
        }
        if parts.count == 2 {
            let groupPart = parts[1]
            if let gid = UInt32(groupPart) {
                user.gid = gid
            } else if let row = groups.first(where: { $0.count >= 3 && $0[0] == groupPart }), let gid = UInt32(row[2]) {
                user.gid = gid
            } else {
                throw CommandError(description: "group '\(groupPart)' does not exist in the guest's /etc/group")
            }
        }
        var supplementary = [user.gid]
        for row in groups where row.count >= 4 {
            guard let gid = UInt32(row[2]), row[3].split(separator: ",").contains(where: { $0 == user.name }) else { continue }
            if !supplementary.contains(gid) { supplementary.append(gid) }
        }
        user.groups = supplementary
        return user
    }

    /// The login-like variables a shell would set for this user.
    var environment: [String: String] {
        var result = ["HOME": home, "USER": name, "LOGNAME": name]
        if let shell, !shell.isEmpty { result["SHELL"] = shell }
        return result
    }

    private static func table(_ path: String) -> [[String]] {
        guard let data = FileManager.default.contents(atPath: path) else { return [] }
        return String(decoding: data, as: UTF8.self).split(separator: "\n").filter { !$0.hasPrefix("#") }
            .map { $0.split(separator: ":", omittingEmptySubsequences: false).map(String.init) }
    }
}
