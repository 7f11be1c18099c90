import Foundation

/// The command line containerd gives a shim, in Go's flag syntax (`-id ID`, `-debug`, `-x=y`),
/// followed by the action (`start`, `delete`, or clade's own `serve`).
public struct ShimArguments: Sendable, Equatable {
    public var namespace = ""
    public var address = ""
    public var publishBinary = ""
    public var id = ""
    public var bundle = ""
    public var debug = false
    public var action = ""

    public init() {}

    public init(parsing arguments: [String]) throws {
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            guard argument.hasPrefix("-"), argument.count > 1 else {
                guard action.isEmpty else { throw ShimUsageError("unexpected argument '\(argument)' after '\(action)'") }
                action = argument
                continue
            }
            var name = String(argument.drop { $0 == "-" })
            var value: String?
            if let equals = name.firstIndex(of: "=") {
                value = String(name[name.index(after: equals)...])
                name = String(name[..<equals])
            }
            if name == "debug" {
                debug = value.map { $0 != "false" } ?? true
                continue
            }
            if value == nil {
                guard index < arguments.count else { throw ShimUsageError("-\(name) needs a value") }
                value = arguments[index]
                index += 1
            }
            switch name {
            case "namespace": namespace = value ?? ""
            case "address": address = value ?? ""
            case "publish-binary": publishBinary = value ?? ""
            case "id": id = value ?? ""
            case "bundle": bundle = value ?? ""
            // Flags containerd may add in later versions carry nothing clade needs.
            default: break
            }
        }
        guard !action.isEmpty else { throw ShimUsageError("no action given; containerd runs this shim with 'start' or 'delete'") }
    }

    /// The flags again, for the long-lived server the `start` action re-executes.
    public var flags: [String] {
        var result = ["-namespace", namespace, "-address", address, "-id", id]
        if !publishBinary.isEmpty { result += ["-publish-binary", publishBinary] }
        if !bundle.isEmpty { result += ["-bundle", bundle] }
        if debug { result.append("-debug") }
        return result
    }
}

/// A command line the shim cannot act on.
public struct ShimUsageError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
