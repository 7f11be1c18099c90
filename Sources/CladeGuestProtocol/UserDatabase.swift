/// Resolves a container-style user (`name`, `uid`, `name:group`, `uid:gid`) through the text
/// of an `/etc/passwd` and `/etc/group`. Shared by the host (an image's `User`, resolved when
/// the image is built) and the agent (every `exec`, resolved in the running guest), so both
/// read the files the same way.
public struct UserDatabase: Sendable {
    /// One resolved account.
    public struct Account: Sendable, Equatable {
        public var name: String
        public var uid: UInt32
        public var gid: UInt32
        /// The primary group first, then every group listing the user as a member.
        public var groups: [UInt32]
        public var home: String
        public var shell: String?
    }

    public enum Failure: Error, CustomStringConvertible, Sendable, Equatable {
        case empty
        case unknownUser(String)
        case unknownGroup(String)

        public var description: String {
            switch self {
            case .empty: return "the user is empty"
            case .unknownUser(let name): return "user '\(name)' is not in the image's /etc/passwd"
            case .unknownGroup(let name): return "group '\(name)' is not in the image's /etc/group"
            }
        }
    }

    private let users: [[String]]
    private let groups: [[String]]

    public init(passwd: String?, group: String?) {
        users = Self.table(passwd)
        groups = Self.table(group)
    }

    public func resolve(_ spec: String) throws -> Account {
        let parts = spec.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        guard let userPart = parts.first, !userPart.isEmpty else { throw Failure.empty }
        var account: Account
        if let row = users.first(where: { $0.count >= 6 && ($0[0] == userPart || (UInt32(userPart) != nil && $0[2] == userPart)) }),
            let uid = UInt32(row[2]), let gid = UInt32(row[3])
        {
            account = Account(name: row[0], uid: uid, gid: gid, groups: [], home: row[5].isEmpty ? "/" : row[5], shell: row.count > 6 ? row[6] : nil)
        } else if let uid = UInt32(userPart) {
            // A uid the image does not name still runs, as container runtimes allow.
            account = Account(name: userPart, uid: uid, gid: 0, groups: [], home: "/", shell: nil)
        } else {
            throw Failure.unknownUser(userPart)
        }
        if parts.count == 2 {
            let groupPart = parts[1]
            if let gid = UInt32(groupPart) {
                account.gid = gid
            } else if let row = groups.first(where: { $0.count >= 3 && $0[0] == groupPart }), let gid = UInt32(row[2]) {
                account.gid = gid
            } else {
                throw Failure.unknownGroup(groupPart)
            }
        }
        var memberOf = [account.gid]
        for row in groups where row.count >= 4 {
            guard let gid = UInt32(row[2]), row[3].split(separator: ",").contains(where: { $0 == account.name }) else { continue }
            if !memberOf.contains(gid) { memberOf.append(gid) }
        }
        account.groups = memberOf
        return account
    }

    private static func table(_ text: String?) -> [[String]] {
        (text ?? "").split(separator: "\n").filter { !$0.hasPrefix("#") }.map { $0.split(separator: ":", omittingEmptySubsequences: false).map(String.init) }
    }
}
