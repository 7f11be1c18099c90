import Foundation

/// What a disk layer says about itself.
public struct DiskLayerInfo: Sendable, Equatable {
    public var format: String
    /// The backing file name exactly as written in the layer (relative names stay relative).
    public var backingName: String?
    public var backingFormat: String?
    /// A file outside the layer that holds its data, if the format allows one.
    public var externalDataFile: String?

    public init(format: String, backingName: String?, backingFormat: String?, externalDataFile: String?) {
        self.format = format
        self.backingName = backingName
        self.backingFormat = backingFormat
        self.externalDataFile = externalDataFile
    }
}

/// The format of a layer's backing file.
public enum BackingFormat: String, Sendable {
    /// A raw image, such as an image's root filesystem blob.
    case raw
    /// Another layer of the same chain.
    case layer
}

/// Copy-on-write disk layers: a writable top over read-only layers over a raw root filesystem.
/// Backing names are relative so that a chain resolves wherever its directory is.
public protocol DiskChain: Sendable {
    /// The layer format name recorded in snapshot metadata, e.g. `qcow2`.
    var layerFormat: String { get }
    /// Creates an empty layer at `layer` whose backing file is `backingName`, resolved relative to
    /// `layer`'s directory.
    func createOverlay(at layer: URL, backingName: String, backingFormat: BackingFormat) throws
    /// Writes the data `top` sees through its whole chain into a new single layer at `output`
    /// backed by `backingName` (a raw file).
    func flatten(_ top: URL, into output: URL, backingName: String) throws
    /// Reads a layer's header.
    func inspect(_ layer: URL) throws -> DiskLayerInfo
    /// Checks a layer's internal consistency; throws with the problem.
    func check(_ layer: URL) throws
    /// Creates a standalone empty disk of `megabytes` (benchmarks' scratch disks).
    func createBlank(at file: URL, megabytes: Int) throws
}
