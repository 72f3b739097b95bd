// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @notice What the Task contract needs from the Node contract.
interface INode {
    /// Selects 3 distinct AVAILABLE nodes for a task and marks them BUSY (bound to `taskId`).
    /// `root`, when non-zero, is an AVAILABLE node that must be one of the 3 (queue dispatch).
    /// Returns ok = false, changing nothing, when not enough eligible nodes are available.
    function selectNodes(uint256 taskId, uint8 taskType, uint256 vramLimit, uint256 seed, address root)
        external
        returns (bool ok, address[3] memory selected);

    /// Frees a node at the end of its task. `record` = false leaves its QoS untouched. `absent` = the node never
    /// committed although its partners did: it pays the absence penalty from its stake and is paused.
    /// Returns whether the node became AVAILABLE, with its vram, the available count of its group and the
    /// task types (bits 1 << taskType) the group runs.
    function finishTask(address node, uint256 score, bool record, bool absent)
        external
        returns (bool available, uint256 vram, uint256 groupAvailable, uint8 taskTypes);

    /// Slashes a node bound to a task: its stake goes to the treasury and it is removed.
    function slash(address node) external;

    /// Number of AVAILABLE nodes that run `taskType` with gpuVram >= vram.
    function availableAtLeast(uint8 taskType, uint256 vram) external view returns (uint256);
}

/// @notice What the Node contract needs from the Task contract.
interface ITask {
    function onNodeAvailable(address node, uint256 vram, uint256 groupAvailable, uint8 taskTypes) external;
}

interface IQOS {
    /// Records a finished task's score; returns whether the node must be kicked out and its new selection weight.
    function recordTask(address node, uint256 score) external returns (bool kick, uint256 weight);
    /// Forgets the node's recent scores (after a kick-out or a slash); the lifetime average stays.
    function resetRecent(address node) external;
    function weightOf(address node) external view returns (uint256);
}

interface INetworkStats {
    function updateNodes(int256 dTotal, int256 dAvailable, int256 dBusy) external;
    function updateTasks(uint256 created, int256 dQueued, int256 dRunning) external;
}

interface ITaskQueue {
    /// Queues a task; returns the ids evicted to make room (lowest value first). Reverts QueueFull when the
    /// new task itself would be the lowest-valued task of a full queue.
    function push(uint256 taskId, uint8 taskType, uint256 vramLimit, uint256 value)
        external
        returns (uint256[] memory evicted);
    /// The highest-value queued task a freshly available node (vram `rootVram`, whose group has
    /// `groupAvailable` available nodes including itself and runs the task types `rootTypes`, bits
    /// 1 << taskType) can run with two partners; 0 if none.
    function peekBest(uint256 rootVram, uint256 groupAvailable, uint8 rootTypes) external view returns (uint256 taskId);
    function remove(uint256 taskId) external;
    function contains(uint256 taskId) external view returns (bool);
    function size() external view returns (uint256);
}
