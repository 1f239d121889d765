"""The live loss plot of DUIIT Train: a table node (one row per progress event) drawn by plot series nodes.

MRML only (no qt), so it runs headless; the panel shows the chart node in a plot view.
"""

from __future__ import annotations

import math

import slicer
import vtk

X_COLUMN = "step"


class LossPlot:
    def __init__(self, name: str = "DUIIT training loss", scene=None):
        self.scene = scene or slicer.mrmlScene
        self.name = name
        self.table_node = self.scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} table")
        self.chart_node = self.scene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
        self.chart_node.SetTitle(name)
        self.chart_node.SetXAxisTitle("iteration (all phases)")
        self.chart_node.SetYAxisTitle("loss")
        self.series_nodes: dict = {}
        self.reset()

    def reset(self) -> None:
        """Empty the table (a new run); series nodes are kept and refilled."""
        table = vtk.vtkTable()
        x = vtk.vtkDoubleArray()
        x.SetName(X_COLUMN)
        table.AddColumn(x)
        self.table_node.SetAndObserveTable(table)
        self._last_step = None

    @property
    def table(self):
        return self.table_node.GetTable()

    def loss_names(self) -> list:
        return [self.table.GetColumnName(c) for c in range(1, self.table.GetNumberOfColumns())]

    def add(self, event: dict) -> bool:
        """Add the losses of a progress event (other events are ignored); True when a row was added."""
        if event.get("event") != "progress":
            return False
        losses = {str(k): float(v) for k, v in (event.get("losses") or {}).items()
                  if isinstance(v, (int, float)) and math.isfinite(float(v))}
        if not losses:
            return False
        step = float(event.get("step", event.get("iteration", 0)))
        if self._last_step is not None and step <= self._last_step:
            # a resumed run restarts its counters: continue the x axis instead of drawing backwards
            step = self._last_step + 1
        self._last_step = step
        table = self.table
        rows = table.GetNumberOfRows()
        for name in losses:
            if table.GetColumnByName(name) is None:
                column = vtk.vtkDoubleArray()
                column.SetName(name)
                column.SetNumberOfTuples(rows)
                column.Fill(float("nan"))
                table.AddColumn(column)
                self._add_series(name)
        table.GetColumnByName(X_COLUMN).InsertNextValue(step)
        for c in range(1, table.GetNumberOfColumns()):
            column = table.GetColumn(c)
            column.InsertNextValue(losses.get(column.GetName(), float("nan")))
        table.Modified()
        return True

    def _add_series(self, name: str) -> None:
        series = self.series_nodes.get(name)
        if series is None:
            series = self.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{self.name}: {name}")
            series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeLine)
            series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
            color = _COLORS[len(self.series_nodes) % len(_COLORS)]
            series.SetColor(*color)
            self.series_nodes[name] = series
            self.chart_node.AddAndObservePlotSeriesNodeID(series.GetID())
        series.SetAndObserveTableNodeID(self.table_node.GetID())
        series.SetXColumnName(X_COLUMN)
        series.SetYColumnName(name)

    def values(self, name: str) -> list:
        column = self.table.GetColumnByName(name)
        return [column.GetValue(r) for r in range(column.GetNumberOfTuples())] if column is not None else []


_COLORS = [(0.12, 0.47, 0.71), (1.0, 0.5, 0.05), (0.17, 0.63, 0.17), (0.84, 0.15, 0.16),
           (0.58, 0.4, 0.74), (0.55, 0.34, 0.29), (0.89, 0.47, 0.76), (0.5, 0.5, 0.5)]
