/// Resolves an image config's `User` (`name`, `uid`, `name:group`, `uid:gid`) to numbers
/// through the image's own `/etc/passwd` and `/etc/group`, as a container runtime does.
public enum ImageUser {
    public struct Resolved: Sendable, Equatable {
        public var uid: UInt32
        public var gid: UInt32
        public init(uid: UInt32, gid: UInt32) {
            self.uid = uid
            self.gid = gid
        }
    }

    public enum Failure: Error, CustomStringConvertible, Sendable {
        case unknownUser(String)
        case unknownGroup(String)

        public var description: String {
            switch self {
            case .unknownUser(let name): return "the image's User '\(name)' is not in its /etc/passwd; fix the image or pass a numeric uid"
            case .unknownGroup(let name): return "the image's group '\(name)' is not in its /etc/group; fix the image or pass a numeric gid"
            }
        }
    }

    public static func resolve(_ spec: String, passwd: String?, group: String?) throws -> Resolved {
        let parts = spec.split(separator: ":", maxSplits: 1).map(String.init)
        let userPart = parts.first ?? spec
        let users = table(passwd)
        var uid: UInt32
        var gid: UInt32 = 0
        if let number = UInt32(userPart) {
            uid = number
            if let row = users.first(where: { $0.count > 3 && UInt32($0[2]) == number }), let primary = UInt32(row[3]) { gid = primary }
        } else {
            guard let row = users.first(where: { $0.first == userPart }), row.count > 3, let number = UInt32(row[2]), let primary = UInt32(row[3]) else {
                throw Failure.unknownUser(userPart)
            }
            uid = number
            gid = primary
        }
        if parts.count == 2 {
            let groupPart = parts[1]
            if let number = UInt32(groupPart) {
                gid = number
            } else {
                guard let row = table(group).first(where: { $0.first == groupPart }), row.count > 2, let number = UInt32(row[2]) else {
                    throw Failure.unknownGroup(groupPart)
                }
                gid = number
            }
        }
        return Resolved(uid: uid, gid: gid)
    }

    private static func table(_ text: String?) -> [[String]] {
        (text ?? "").split(separator: "\n").filter { !$0.hasPrefix("#") }.map { $0.split(separator: ":", omittingEmptySubsequences: false).map(String.init) }
    }
}
